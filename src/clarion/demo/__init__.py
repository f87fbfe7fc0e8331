"""The demo shop: a year of a gift shop's customers and orders as Segment messages.

`behaviour.generate` yields the messages, deterministic per seed; `load.load_demo` sends them
through the ingestion path into the default workspace. `clarion demo` runs both.
"""

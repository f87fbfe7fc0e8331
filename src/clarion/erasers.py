"""The profile erasers a person's erasure runs, whoever asks for it: the API
(`app.state.profile_erasers`) and `clarion profiles erase`. Apart from both so that each
erases as much as the other, and so that commands need not import the API to get them."""

from __future__ import annotations

from clarion.campaigns import audience
from clarion.profiles.erasure import ProfileErasers
from clarion.segments import membership

# Segment memberships and their history; entries of campaigns' list audiences.
PROFILE_ERASERS: ProfileErasers = (membership.erase_profiles, audience.forget_profiles)

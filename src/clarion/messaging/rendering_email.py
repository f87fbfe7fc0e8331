"""Email's extra steps around the template: CSS inlining, the plain-text part, the
preheader, link rewriting for click tracking and the open pixel.

Inlining CSS (`css_inline`) and deriving the text part (`inscriptis`) cost a few
milliseconds per document, far more than rendering it, so both run once per template
version, on the template source, and the results are templates themselves:

- Jinja tags are swapped for inert placeholders; every start tag gets a numbered marker
  attribute; `css_inline` inlines that copy; each element's new `style` attribute is then
  copied back onto the *original* source, whose structure (loops between `<tr>`s, tags
  opened in one branch of an `if`) the HTML parser would otherwise rearrange. `<style>`
  blocks become one block holding what cannot be inlined (`@media`, `@font-face`).
  A `style` attribute holding a Jinja tag keeps its text after the inlined declarations,
  where it wins as inline styles do.
- `inscriptis` turns the placeholder copy into text; putting the tags back gives a text
  template rendered without escaping. Links read "text (url)".

Where a template defeats this (Jinja inside a `<style>` block, in a `class` or `id`, or
between a tag's attributes; block tags the text conversion would lose), that step runs
per recipient on the rendered HTML instead: correct, and `PreparedEmail.per_recipient`
says which step and why.
"""

from __future__ import annotations

import functools
import html
import re
from collections.abc import Callable, Collection
from dataclasses import dataclass, field

import css_inline
from inscriptis import get_text  # type: ignore[import-untyped]
from inscriptis.css_profiles import CSS_PROFILES  # type: ignore[import-untyped]
from inscriptis.html_properties import Display  # type: ignore[import-untyped]
from inscriptis.model.config import ParserConfig  # type: ignore[import-untyped]
from inscriptis.model.html_document_state import (  # type: ignore[import-untyped]
    HtmlDocumentState,
)
from inscriptis.model.html_element import HtmlElement  # type: ignore[import-untyped]
from inscriptis.model.tag import CustomHtmlTagHandlerMapping  # type: ignore[import-untyped]
from jinja2 import Template
from jinja2.exceptions import TemplateSyntaxError

from clarion.messaging.rendering_env import compile_template

PREPARED_CACHE_SIZE = 256
_INLINER = css_inline.CSSInliner(
    keep_style_tags=False, keep_at_rules=True, keep_link_tags=True, load_remote_stylesheets=False
)


def _ignore_start(state: HtmlDocumentState, attrs: dict[str, str]) -> None:
    return None


def _ignore_end(state: HtmlDocumentState) -> None:
    return None


# Tables read as blocks: a layout table's padded columns make unreadable text.
_TABLE_TAGS = ("table", "tr", "td", "th")
_TEXT_CONFIG = ParserConfig(
    css={
        **CSS_PROFILES["strict"],
        **{tag: HtmlElement(display=Display.block) for tag in (*_TABLE_TAGS, "hr")},
    },
    display_links=True,
    custom_html_tag_handler_mapping=CustomHtmlTagHandlerMapping(
        start_tag_mapping=dict.fromkeys(_TABLE_TAGS, _ignore_start),
        end_tag_mapping=dict.fromkeys(_TABLE_TAGS, _ignore_end),
    ),
)
_OPENING = re.compile(r"\{[{%#]")
_RAW_OPEN = re.compile(r"\{%-?\s*raw\s*-?%\}")
_RAW_CLOSE = re.compile(r"\{%-?\s*endraw\s*-?%\}")
_BLOCK_KEYWORD = re.compile(r"\{%[-+]?\s*(\w+)")
_DROPPABLE_BLOCKS = frozenset({"if", "elif", "else", "endif", "for", "endfor", "break", "continue"})
_MARKUP = re.compile(
    r"""(?P<comment><!--.*?-->)
    | <(?P<raw>style|script)\b(?:[^>"']++|"[^"]*+"|'[^']*+')*+>(?P<body>.*?)</(?P=raw)\s*>
    | <(?P<name>[A-Za-z][^\s/>]*)(?P<attrs>(?:[^>"']++|"[^"]*+"|'[^']*+')*+)>""",
    re.S | re.I | re.X,
)
_ATTRIBUTE = re.compile(
    r"""(?P<name>[^\s"'>/=]+)(?:\s*=\s*(?:"(?P<dq>[^"]*)"|'(?P<sq>[^']*)'|(?P<uq>[^\s"'=<>`]+)))?"""
)
_OUTPUT_TAG = re.compile(r"""<[A-Za-z][^\s/>]*((?:[^>"']++|"[^"]*+"|'[^']*+')*+)>""")
_MARKER = re.compile(r'\sdata-clarion-mark="(\d+)"')
_STYLE_VALUE = re.compile(r"""\sstyle\s*=\s*(?:"([^"]*)"|'([^']*)'|([^\s>"']+))""", re.I)
_STYLE_BLOCK = re.compile(r"<style[^>]*>(.*?)</style>", re.S | re.I)
_MARKDOWN_LINK = re.compile(r"\[([^\[\]]*)\]\(([^()\s]*)\)")
_BODY_OPEN = re.compile(r"""<body\b(?:[^>"']++|"[^"]*+"|'[^']*+')*+>""", re.I)
_BLANK_LINES = re.compile(r"\n\n\n+")
_TRAILING_SPACE = re.compile(r"[ \t\u00a0]+\n")
# An <a> start tag (a `>` quoted in one of its attributes ends it early: the href after it
# is left alone) and its href's value, double-quoted, single-quoted or bare.
_ANCHOR = re.compile(r"<[aA]\s[^>]*+>")
_HREF = re.compile(r"""\s[hH][rR][eE][fF]\s*=\s*(?:"([^"]*)"|'([^']*)'|([^\s>"']+))""")
_WEB = ("https://", "http://")
_UNTRACKED = re.compile(r"\sdata-clarion-untracked(?:\s*=\s*(?:\"[^\"]*\"|'[^']*'|[^\s>]+))?", re.I)
_BODY_CLOSE = re.compile(r"</body\s*>", re.I)
# Zero-width fillers keep the body's first words out of the inbox preview after the preheader.
_PREHEADER_FILL = "&#847;&zwnj;&nbsp;" * 30


@dataclass(frozen=True, slots=True)
class PreparedEmail:
    """An email html template readied once per version: `html` with its CSS inlined and
    `text` the derived text template (None when the content has its own text part).
    `per_recipient` names the steps ("css", "text") left to do after each render, and why."""

    html: Template
    text: Template | None
    per_recipient: dict[str, str] = field(default_factory=dict)


class _Protected:
    """A template source with each Jinja tag replaced by a placeholder `{prefix}{n}z`."""

    def __init__(self, source: str) -> None:
        prefix = "cxjinja"
        while prefix in source:
            prefix += "x"
        self.prefix = prefix
        self.tags: list[str] = []
        parts: list[str] = []
        position = 0
        for start, end in jinja_spans(source):
            parts += [source[position:start], f"{prefix}{len(self.tags)}z"]
            self.tags.append(source[start:end])
            position = end
        parts.append(source[position:])
        self.text = "".join(parts)
        self.placeholder = re.compile(rf"{prefix}(\d+)z")

    def restore(self, text: str, *, literal: bool = False) -> str:
        """Put the tags back into `text`; with `literal`, make what was not a tag inert."""
        if literal:
            text = re.sub(r"\{[{%#]", lambda m: f"{{{{ {m.group(0)!r} }}}}", text)
        return self.placeholder.sub(lambda m: self.tags[int(m.group(1))], text)

    def absorb_blocks(self, text: str) -> str:
        """Let block tags and comments take the line break after them when alone on a
        line, and one of the spaces around them otherwise, so a branch not taken leaves
        no hole in the text."""
        blocks = "|".join(
            f"{self.prefix}{i}z" for i, tag in enumerate(self.tags) if tag.startswith(("{%", "{#"))
        )
        if not blocks:
            return text
        text = re.sub(rf"(?m)^[ \t]*((?:{blocks})+)[ \t]*\n", r"\1", text)
        text = re.sub(rf"(?m) +((?:{blocks})+)$", r"\1", text)
        return re.sub(rf"(?<= )((?:{blocks})+) ", r"\1", text)

    def blocks(self, text: str) -> list[int]:
        """Indices of the block tags (`{% ... %}`) whose placeholders are in `text`."""
        found = (int(i) for i in self.placeholder.findall(text))
        return [i for i in found if self.tags[i].startswith("{%")]


def jinja_spans(source: str) -> list[tuple[int, int]]:
    """The (start, end) of each Jinja tag, comment and raw block in `source`, in order."""
    spans: list[tuple[int, int]] = []
    position = 0
    while (opening := _OPENING.search(source, position)) is not None:
        start = opening.start()
        kind = source[start + 1]
        if kind == "#":
            close = source.find("#}", start + 2)
            end = len(source) if close < 0 else close + 2
        else:
            end = _tag_end(source, start + 2, "}}" if kind == "{" else "%}")
            if kind == "%" and _RAW_OPEN.fullmatch(source, start, end):
                raw_end = _RAW_CLOSE.search(source, end)
                end = len(source) if raw_end is None else raw_end.end()
        spans.append((start, end))
        position = end
    return spans


def _tag_end(source: str, position: int, closing: str) -> int:
    quote = ""
    while position < len(source):
        char = source[position]
        if quote:
            if char == "\\":
                position += 1
            elif char == quote:
                quote = ""
        elif char in "\"'":
            quote = char
        elif source.startswith(closing, position):
            return position + 2
        position += 1
    return len(source)


@functools.lru_cache(maxsize=PREPARED_CACHE_SIZE)
def prepare_email(source: str, *, derive_text: bool) -> PreparedEmail:
    """Compile an email html template with its CSS inlined and, with `derive_text`, its
    text part as a template; raises `TemplateSyntaxError` for a broken template."""
    compile_template(source, "html")  # a broken template fails here, with its own lines
    protected = _Protected(source)
    per_recipient: dict[str, str] = {}
    inlined, reason = _inline_source(protected)
    if reason:
        per_recipient["css"] = reason
    text = None
    if derive_text:
        text, reason = _text_template(protected)
        if reason:
            per_recipient["text"] = reason
    return PreparedEmail(compile_template(inlined, "html"), text, per_recipient)


_Tag = tuple[int, str, str | None]  # where its name ends, its attributes, a Jinja style


def _inline_source(protected: _Protected) -> tuple[str, str]:
    """The source with its CSS inlined, or the source as it is and why inlining must
    wait for each rendered message."""
    source = protected.text
    styles = [m for m in _MARKUP.finditer(source) if (m["raw"] or "").lower() == "style"]
    if not styles:
        return protected.restore(source), ""
    marked: list[str] = []
    tags: list[_Tag] = []
    position = 0
    for match in _MARKUP.finditer(source):
        raw = (match["raw"] or "").lower()
        if raw == "style" and protected.placeholder.search(match["body"]):
            return protected.restore(source), "a Jinja tag inside a <style> block"
        if not match["name"]:
            continue
        name, attrs = match["name"], match["attrs"]
        style, problem = _check_tag(protected, name, attrs)
        if problem:
            return protected.restore(source), problem
        if style is not None and (old := _STYLE_VALUE.search(attrs)) is not None:
            attrs = attrs.replace(old.group(0), "", 1)  # out of css_inline's way, put back after
        marked += [
            source[position : match.start()],
            f'<{name} data-clarion-mark="{len(tags)}"{attrs}>',
        ]
        tags.append((match.end("name"), match["attrs"], style))
        position = match.end()
    marked.append(source[position:])
    try:
        output = _INLINER.inline("".join(marked))
    except css_inline.InlineError as exc:
        return protected.restore(source), f"css_inline failed: {exc}"
    inlined: dict[int, str] = {}
    for tag in _OUTPUT_TAG.finditer(output):
        number, found = _MARKER.search(tag.group(1)), _STYLE_VALUE.search(tag.group(1))
        if number and found:
            inlined.setdefault(int(number.group(1)), found.group(1))
    kept = " ".join(" ".join(block.split()) for block in _STYLE_BLOCK.findall(output))
    spans = [m.span() for m in styles]
    return protected.restore(_patch(source, tags, inlined, spans, kept)), ""


def _check_tag(protected: _Protected, name: str, attrs: str) -> tuple[str | None, str]:
    """A start tag's `style` value when it holds a Jinja tag, and what makes inlining
    unsafe, if anything."""
    if protected.placeholder.search(name):
        return None, "a tag name made by a Jinja tag"
    rest = attrs
    style = None
    for attribute in _ATTRIBUTE.finditer(attrs):
        value = attribute["dq"] or attribute["sq"] or attribute["uq"] or ""
        attribute_name = attribute["name"].lower()
        if protected.placeholder.search(value):
            if attribute_name in ("class", "id"):
                return None, f"a Jinja tag in a {attribute_name} attribute"
            if attribute_name == "style":
                style = value.replace('"', "&quot;")
        rest = rest.replace(attribute.group(0), attribute["name"], 1)
    if protected.placeholder.search(rest):
        return None, "a Jinja tag between a tag's attributes"
    return style, ""


def _patch(
    source: str, tags: list[_Tag], inlined: dict[int, str], styles: list[tuple[int, int]], kept: str
) -> str:
    """`source` with each tag's inlined style and one <style> block of the rules kept,
    every line where it was, so errors keep their line numbers."""
    edits: list[tuple[int, int, str]] = []
    for number, (name_end, attrs, jinja_style) in enumerate(tags):
        style = inlined.get(number)
        if style is None:
            continue
        if jinja_style is not None:
            style = f"{style.rstrip(';')};{jinja_style}"
        old = _STYLE_VALUE.search(attrs)
        if old is None:
            edits.append((name_end, name_end, f' style="{style}"'))
        else:
            breaks = "\n" * old.group(0).count("\n")
            edits.append(
                (name_end + old.start(), name_end + old.end(), f' style="{style}"{breaks}')
            )
    for index, (start, end) in enumerate(styles):
        block = f"<style>{kept}</style>" if index == 0 and kept else ""
        edits.append((start, end, block + "\n" * source.count("\n", start, end)))
    for edit_start, edit_end, text in sorted(edits, key=lambda edit: edit[0], reverse=True):
        source = source[:edit_start] + text + source[edit_end:]
    return source


def _text_template(protected: _Protected) -> tuple[Template | None, str]:
    """The text part as a template, or None and why it must be derived per recipient."""
    text = _MARKDOWN_LINK.sub(_link_text, get_text(protected.text, _TEXT_CONFIG))
    expected = protected.blocks(protected.text)
    kept = protected.blocks(text)
    if len(set(kept)) != len(kept) or kept != [i for i in expected if i in set(kept)]:
        return None, "the text conversion reordered or repeated block tags"
    for lost in sorted(set(expected) - set(kept)):
        keyword = _BLOCK_KEYWORD.match(protected.tags[lost])
        if keyword is None or keyword.group(1) not in _DROPPABLE_BLOCKS:
            return None, f"the text conversion would lose {protected.tags[lost]!r}"
    text = protected.absorb_blocks(_TRAILING_SPACE.sub("\n", text))
    try:
        return compile_template(protected.restore(text, literal=True), "text"), ""
    except TemplateSyntaxError as exc:
        return None, f"the derived text template does not compile: {exc.message}"


def _link_text(match: re.Match[str]) -> str:
    label, url = match.group(1).strip(), match.group(2)
    if not label or url.startswith(("#", "javascript:")):
        return label
    url = url.removeprefix("mailto:").removeprefix("tel:")
    return url if label == url else f"{label} ({url})"


def tidy_text(text: str) -> str:
    """Trailing spaces and runs of blank lines out of a rendered text part."""
    # str.replace and `in` before any regex: a regex tried at every space of the text
    # costs more than the rest of the text part's render.
    for _ in range(3):
        if " \n" not in text:
            break
        text = text.replace(" \n", "\n")
    if " \n" in text or "\t\n" in text or "\u00a0\n" in text:
        text = _TRAILING_SPACE.sub("\n", text)
    if "\n\n\n" in text:
        text = _BLANK_LINES.sub("\n\n", text)
    return text.strip() + "\n"


def inline_css(html_text: str) -> str:
    """`html_text` with its <style> rules inlined, at-rules kept in a <style> block, no
    remote stylesheet fetched."""
    return _INLINER.inline(html_text)


def html_to_text(html_text: str) -> str:
    """A readable plain-text version of rendered HTML: tables as blocks, links as
    "text (url)"."""
    return tidy_text(_MARKDOWN_LINK.sub(_link_text, get_text(html_text, _TEXT_CONFIG)))


def insert_preheader(html_text: str, preheader: str) -> str:
    """`html_text` with `preheader` (already escaped HTML) as a hidden first element of
    the body, the text inbox previews show."""
    hidden = (
        '<div style="display:none;font-size:1px;line-height:1px;max-height:0;max-width:0;'
        f'opacity:0;overflow:hidden;mso-hide:all;">{preheader}{_PREHEADER_FILL}</div>'
    )
    start = html_text.find("<body")  # the usual spelling, found without a regex
    body = (_BODY_OPEN.match(html_text, start) if start >= 0 else None) or _BODY_OPEN.search(
        html_text
    )
    at = body.end() if body else 0
    return html_text[:at] + hidden + html_text[at:]


def rewrite_links(
    html_text: str,
    map_url: Callable[[str, int], str],
    *,
    untracked: Collection[str] = (),
) -> str:
    """Pass each `<a href>` holding an http(s) URL through `map_url(url, index)` (index
    counts the links passed, from 0) and put back what it returns. Skipped: other schemes
    (mailto:, tel:), anchors, links marked `data-clarion-untracked` (the mark is removed)
    and URLs in `untracked` (the unsubscribe URL)."""
    parts: list[str] = []
    position = index = 0
    for anchor in _ANCHOR.finditer(html_text):
        tag = anchor.group(0)
        if "untracked" in tag and (mark := _UNTRACKED.search(tag)) is not None:
            parts.append(html_text[position : anchor.start() + mark.start()])
            position = anchor.start() + mark.end()
            continue
        start = tag.find(' href="') + 7  # the usual spelling, found without a regex
        end = tag.find('"', start) if start > 6 else -1
        quoted = True
        if end < 0:
            if (where := _href_value(tag)) is None:
                continue
            start, end, quoted = where
        raw = tag[start:end]
        url = raw.replace("&amp;", "&") if "&" in raw else raw
        if "&" in url and ";" in url:  # another character reference
            url = html.unescape(raw)
        url = url.strip()
        web = url.startswith(_WEB) or url[:8].lower().startswith(_WEB)
        if not web or url in untracked:
            continue
        mapped = map_url(url, index)
        index += 1
        if "&" in mapped or '"' in mapped or "'" in mapped or "<" in mapped or ">" in mapped:
            mapped = html.escape(mapped, quote=True)
        parts += [
            html_text[position : anchor.start() + start],
            mapped if quoted else f'"{mapped}"',
        ]
        position = anchor.start() + end
    parts.append(html_text[position:])
    return "".join(parts)


def _href_value(tag: str) -> tuple[int, int, bool] | None:
    """Where an <a> start tag's href value starts and ends, and whether it is quoted."""
    found = _HREF.search(tag)
    if found is None:
        return None
    group = found.lastindex or 1
    return found.start(group), found.end(group), group < 3


def add_open_pixel(html_text: str, pixel_url: str) -> str:
    """`html_text` with a 1x1 tracking image before its last </body>, or at its end."""
    pixel = (
        f'<img src="{html.escape(pixel_url, quote=True)}" width="1" height="1" alt="" '
        'style="display:block;width:1px;height:1px;border:0;">'
    )
    at = max(html_text.rfind("</body"), html_text.rfind("</BODY"))  # no regex over it all
    if at < 0:
        closing = max(_BODY_CLOSE.finditer(html_text), key=lambda m: m.start(), default=None)
        if closing is None:
            return html_text + pixel
        at = closing.start()
    return html_text[:at] + pixel + html_text[at:]

"""The frontend as on-call sees it: Debian's headless Chromium signs in, opens a page, lets its
JavaScript fill the widgets, and gives back the page (DOM) or a PNG of it.

Why a real browser: the API accepts a dashboard whose widgets then fail to render (a field name of
the other Zabbix version, an item the viewer may not see), and only the frontend's own scripts,
run by a browser, show it. The check reads what the widget shows, as a person would: Zabbix
writes a widget's failure into the widget ("No permissions to referred object or it does not
exist!", a red message box).
"""

import os
import re
import shutil
import subprocess
import tempfile
from typing import List, NamedTuple, Optional, Tuple
from urllib.parse import urlencode

from lab.netns import Netns

CHROMIUM = "chromium"
SIZE = (1600, 1000)
# the frontend's "nothing to show" text for what the viewer may not read (6.0 and 7.0); its other
# failures are message boxes (below). Only these: a widget's own text (a problem's name in the
# problems widget) may say "Cannot ..." and is no failure of the widget.
ERRORS = ("No permissions to referred object",)
_ERROR_BOX = re.compile(r'class="[^"]*\bmsg-(?:bad|warning)\b')
_WIDGET = re.compile(r'<div class="dashboard-grid-widget-head(?:er)?"[^>]*>.*?<h4[^>]*>(.*?)</h4>', re.S)
_CONTENT = re.compile(r'class="dashboard-grid-widget-contents?\b[^"]*"')  # 6.0: -content, 7.0: -contents ...
_MESSAGES = re.compile(r'class="dashboard-grid-widget-messages"')  # 7.0 writes a widget's errors here
_DIV = re.compile(r"<(/?)div\b")
_STRIP = re.compile(r"<(script|style)\b.*?</\1>|<[^>]+>", re.S)


class Widget(NamedTuple):
    name: str
    text: str  # what the widget shows, as text
    error: Optional[str]  # why it failed, as the frontend says it; None when it rendered


def login_url(page_url: str, user: str = "Admin", password: str = "zabbix") -> str:
    """The frontend's sign-in with ``page_url`` as where to go next (one request: the sign-in form
    reads its fields from the query string as well as from a POST)."""
    front, sep, page = page_url.partition("/zabbix.php")
    if not sep:
        raise ValueError("not a frontend page: %r" % page_url)
    return front + "/index.php?" + urlencode({"name": user, "password": password, "enter": "Sign in",
                                              "request": "zabbix.php" + page})


def _chromium(netns: Optional[Netns], args: List[str], url: str, timeout: float,
              size: Tuple[int, int] = SIZE) -> bytes:
    if shutil.which(CHROMIUM) is None:
        raise RuntimeError("chromium is not installed (scripts/install-deps.sh installs it)")
    profile = tempfile.mkdtemp(prefix="ctzbx-chromium-")
    try:
        argv = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                "--user-data-dir=" + profile, "--window-size=%d,%d" % size,
                # virtual time runs until the page is idle (its widget requests answered) or the
                # budget is spent: a wait for the page, not a sleep
                "--virtual-time-budget=20000"] + args + [url]
        if netns is not None:
            argv = netns.cmd(argv)
        p = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=timeout)
        if p.returncode != 0:
            raise RuntimeError("chromium failed (%d): %s" % (p.returncode, p.stderr.decode(errors="replace")[-500:]))
        return p.stdout
    finally:
        shutil.rmtree(profile, ignore_errors=True)


def page(netns: Optional[Netns], page_url: str, user: str = "Admin", password: str = "zabbix",
         timeout: float = 90) -> str:
    """The page's DOM once its scripts have run, signed in as ``user``."""
    dom = _chromium(netns, ["--dump-dom"], login_url(page_url, user, password), timeout).decode(errors="replace")
    title = re.search(r"<title>(.*?)</title>", dom, re.S)
    if 'name="password"' in dom or title is None or "Dashboard" not in title.group(1):
        raise RuntimeError("the frontend did not show the dashboard (sign-in as %s failed?): title %r"
                           % (user, title.group(1) if title else None))
    return dom


def screenshot(netns: Optional[Netns], page_url: str, png: str, user: str = "Admin", password: str = "zabbix",
               timeout: float = 90, size: Tuple[int, int] = (1600, 1400)) -> str:
    """A PNG of the page; taller than ``page``'s window, so a dashboard's second row shows whole."""
    _chromium(netns, ["--screenshot=" + png], login_url(page_url, user, password), timeout, size)
    with open(png, "rb") as f:
        if f.read(8) != b"\x89PNG\r\n\x1a\n":
            raise RuntimeError("chromium wrote no PNG to %s" % png)
    return png


def _inner(html: str, start: int) -> str:
    """The inside of the element whose opening tag contains ``start``, to its matching close
    (divs counted: a widget's content holds divs of its own)."""
    begin = html.index(">", start) + 1
    depth, pos = 1, begin
    for m in _DIV.finditer(html, begin):
        depth += -1 if m.group(1) else 1
        if depth == 0:
            return html[begin:m.start()]
        pos = m.end()
    return html[begin:pos]


def widgets(dom: str) -> List[Widget]:
    """Each widget of a dashboard page, in page order, with what it shows and its error if any.
    A widget whose content never arrived counts as failed."""
    heads = list(_WIDGET.finditer(dom))
    out = []
    for i, m in enumerate(heads):
        end = heads[i + 1].start() if i + 1 < len(heads) else len(dom)
        c = _CONTENT.search(dom, m.end(), end)
        content = _inner(dom, c.start()) if c else ""
        text = " ".join(_STRIP.sub(" ", content).split())
        error = next((e for e in ERRORS if e in text), None)
        box = _MESSAGES.search(content)
        said = " ".join(_STRIP.sub(" ", _inner(content, box.start())).split()) if box else ""
        if error is None and said:
            error = said
        if error is None and _ERROR_BOX.search(content):
            error = "an error message box"
        if error is None and not text and "<svg" not in content:
            error = "nothing rendered"
        out.append(Widget(_STRIP.sub("", m.group(1)).strip(), text, error))
    return out


def png_size(path: str) -> Tuple[int, int]:
    with open(path, "rb") as f:
        head = f.read(24)
    if head[:8] != b"\x89PNG\r\n\x1a\n":
        raise ValueError("%s is not a PNG" % path)
    return int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")


def side_by_side(out: str, panels: List[Tuple[str, str]]) -> str:
    """One PNG of several (title, png) panels next to each other, drawn by the same browser (a
    page of images), so two runs' graphs can be read at one glance."""
    import html

    sizes = [png_size(p) for _, p in panels]
    width, height = sum(w for w, _ in sizes) + 20 * len(panels), max(h for _, h in sizes) + 50
    work = tempfile.mkdtemp(prefix="ctzbx-panels-")
    try:
        cells = []
        for i, (title, path) in enumerate(panels):
            shutil.copy(path, os.path.join(work, "%d.png" % i))
            cells.append('<td><div class="t">%s</div><img src="%d.png"></td>' % (html.escape(title), i))
        page = os.path.join(work, "panels.html")
        with open(page, "w") as f:
            f.write('<!doctype html><html><head><meta charset="utf-8"><style>body{margin:0;background:#fff;'
                    'font:15px sans-serif}td{vertical-align:top;padding:6px 10px}.t{font-weight:bold;'
                    'padding:4px 0 8px}</style></head><body><table><tr>%s</tr></table></body></html>'
                    % "".join(cells))
        _chromium(None, ["--screenshot=" + os.path.abspath(out)], "file://" + page, 60, (width, height))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return out

"""The operator console: one static page (``/console``) and the small JSON reads it needs.

The page is plain HTML/JS/CSS shipped in ``static/`` (no CDN, no build step). It holds
no data itself: everything it shows comes from operator-token API calls, so without a
valid token nothing renders. The token arrives in the URL fragment (never sent to the
server) or from a prompt, and lives in ``sessionStorage`` (gone with the tab).
"""

from __future__ import annotations

from bridge.console.resources import install_console

__all__ = ["install_console"]

"""``vaelab serve``: an interactive latent-space explorer in the browser.

``explorer.py`` asks the model (through the library's free functions), ``latentmap.py``
turns a point of the page's map into a latent z, ``fields.py`` checks what a request sends,
``app.py`` is the HTTP server (standard library only) and ``static/`` the page (plain
HTML/JS/CSS shipped in the package: no build step, nothing fetched from elsewhere).
"""

from vaelab.web.app import App, build_app, make_server, serve
from vaelab.web.explorer import Explorer

__all__ = ["App", "Explorer", "build_app", "make_server", "serve"]

"""Sphinx configuration of shoal's documentation site (``make docs``).

The pages are Markdown (MyST) in this folder; the API reference is generated from the
docstrings of the installed package. The build is strict: warnings are errors and every
cross-reference must resolve (``make docs`` passes ``-W -n``).
"""

from __future__ import annotations

import shoal

project = "shoal"
author = "the shoal developers"
copyright = "2026, the shoal developers"
release = shoal.__version__
version = release

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
]
source_suffix = {".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build"]
myst_heading_anchors = 3

html_theme = "furo"
html_title = "shoal"
html_static_path: list[str] = []

# Docstrings are written in Google style; their examples run in the tests.
napoleon_google_docstring = True
napoleon_numpy_docstring = False
autodoc_member_order = "bysource"
autodoc_typehints = "description"
# Types only for documented parameters: private ones (Pool's ``_role``) stay out.
autodoc_typehints_description_target = "documented"
autodoc_typehints_format = "short"
autodoc_preserve_defaults = True
autodoc_default_options = {"members": True}

nitpicky = True
# Every reference to shoal's own documented names must resolve. Names of Python, of
# multiprocessing, joblib and of type variables cannot: Python's inventory is not fetched
# (the build runs without reaching docs.python.org), and type variables and private
# aliases have no page.
nitpick_ignore_regex = [
    (
        r"py:.*",
        r"(collections|typing|types|enum|queue|_queue|pickle|_pickle|asyncio|threading|"
        r"concurrent|multiprocessing|joblib|numpy|dask|distributed|ray|tqdm|rich)(\..*)?",
    ),
    (r"py:.*", r"~?(.*\.)?[TRPK]"),  # type variables
    (r"py:.*", r"(.*\.)?_[A-Za-z]\w*"),  # private names
    (r"py:class", r"Withdrawer"),  # the Pool's side of a future: internal
]

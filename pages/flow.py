"""Ending a page early: what `st.stop()` is for, without stopping the shared sidebar that app.py draws after the page.

`st.stop()` asks Streamlit to stop the whole script run, so every element after it, the sidebar's dataset, latest
run and device too, raised the same stop and was never drawn (the Train and Evaluate pages had no sidebar until a
run existed). `end_page()` leaves only the page; app.py catches `PageEnd` and goes on to the sidebar. Kept apart from
pages.common so app.py can catch it before anything heavy is imported. Every page runs inside app.py: the one run
that could start a page alone (a fresh server's first request, in Streamlit's legacy multipage mode) is handed to
app.py when the page imports pages.common, before it can end.
"""

from typing import NoReturn


class PageEnd(Exception):
    """The page has shown all it can (usually a message saying why); the app's run goes on."""


def end_page() -> NoReturn:
    raise PageEnd

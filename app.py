"""MedImage Studio: entry point. Navigation, and the sidebar every page shares.

The page list in the sidebar is drawn here with `st.page_link`, and Streamlit's own sidebar navigation
is switched off in `.streamlit/config.toml` (`client.showSidebarNavigation = false`). Streamlit lists
every file of a `pages/` folder (app, common, ...) on a fresh server's first load, until a run calls
`st.navigation`; with its list off, the sidebar only ever shows the links below.

Nothing heavy is imported before the page starts drawing (README: "Cold start"): `st.navigation` runs
first, and the shared sidebar's imports wait until the page is done.
"""

import streamlit as st

from pages.flow import PageEnd

st.set_page_config(page_title="MedImage Studio", page_icon=":material/radiology:", layout="wide")

PAGES = [
    st.Page("pages/home.py", title="Home", icon=":material/home:", default=True),
    st.Page("pages/dataset.py", title="Dataset", icon=":material/photo_library:"),
    st.Page("pages/lab.py", title="Preprocessing lab", icon=":material/tune:"),
    st.Page("pages/train.py", title="Train", icon=":material/model_training:"),
    st.Page("pages/evaluate.py", title="Evaluate", icon=":material/analytics:"),
    st.Page("pages/predict.py", title="Predict", icon=":material/stethoscope:"),
]

navigation = st.navigation(PAGES, position="hidden")
with st.sidebar:
    for page in PAGES:
        st.page_link(page)
try:
    navigation.run()
except PageEnd:  # the page ended early (pages.flow.end_page): the sidebar is still drawn
    pass
finally:  # after the page, which may have just changed the active dataset (or stopped early)
    from pages.common import active_dataset_name, sidebar

    sidebar(active_dataset_name())

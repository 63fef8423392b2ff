"""MedImage Studio: entry point. Navigation, and the sidebar every page shares."""

import streamlit as st

from pages.common import active_dataset_name, sidebar

st.set_page_config(page_title="MedImage Studio", page_icon=":material/radiology:", layout="wide")

PAGES = [
    st.Page("pages/home.py", title="Home", icon=":material/home:", default=True),
    st.Page("pages/dataset.py", title="Dataset", icon=":material/photo_library:"),
    st.Page("pages/lab.py", title="Preprocessing lab", icon=":material/tune:"),
    st.Page("pages/train.py", title="Train", icon=":material/model_training:"),
    st.Page("pages/evaluate.py", title="Evaluate", icon=":material/analytics:"),
    st.Page("pages/predict.py", title="Predict", icon=":material/stethoscope:"),
]

navigation = st.navigation(PAGES)
try:
    navigation.run()
finally:  # after the page, which may have just changed the active dataset (or stopped early)
    sidebar(active_dataset_name())

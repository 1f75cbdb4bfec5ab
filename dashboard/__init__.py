"""The Streamlit dashboard of tuner (``tuner dashboard`` serves ``app.py``).

Importing this package imports neither Streamlit nor plotly.
"""

PASSWORD_ENV = "TUNER_DASHBOARD_PASSWORD"  # the password the page asks for, when set

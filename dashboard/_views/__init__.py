"""What each view of the dashboard shows, as plain records: no Streamlit, no plotly.

``overview`` (the study list), ``front`` (the Pareto front and the deployment
budget), ``history`` (objectives, hypervolume and learning curves over trials),
``importance`` (parameters), ``trials`` (the table and one trial), and ``page`` (one
study's records, shared by its views).
"""

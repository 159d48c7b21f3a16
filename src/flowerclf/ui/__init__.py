"""The Streamlit web UI (``flowerclf ui``) and the backends it talks to."""

"""Small Streamlit widgets the pages compose. All state lives in the core's store."""

"""The workspace server: FastAPI app, auth, job runner, web UI."""

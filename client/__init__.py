"""`batches`, the service's command-line client (`python -m client`, or the `batches`
script that `make venv` installs): httpx for the API, click for commands, rich for the
terminal."""

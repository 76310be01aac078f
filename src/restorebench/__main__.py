from restorebench.cli import app

app(prog_name="restorebench")

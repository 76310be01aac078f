from restorebench.cli import app

app()

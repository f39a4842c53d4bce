import greet

print(greet.message("venv"))

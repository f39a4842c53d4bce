import greet

print(greet.message("workflow"))

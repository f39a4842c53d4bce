"""A tiny web app. It is a demo of layer caching: the image has no Python."""

from flask import Flask

app = Flask(__name__)


@app.route("/")
def index():
    return "hello from minibuild\n"


if __name__ == "__main__":
    app.run(host="0.0.0.0", port=8000)

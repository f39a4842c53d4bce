"""A background worker beside the web app. Like app.py, it is a demo of layer
reuse: the image has no Python."""

import time

import requests


def main():
    while True:
        requests.get("http://app:8000/")
        time.sleep(60)


if __name__ == "__main__":
    main()

from .cli import entrypoint

if __name__ == "__main__":  # spawned worker processes import __main__ again; they must not rerun the app
    entrypoint()

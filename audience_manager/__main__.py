"""``python -m audience_manager``: the command line."""

from audience_manager.cli import main

__all__ = ["main"]

if __name__ == "__main__":
    main()

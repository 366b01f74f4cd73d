"""Developer tools that run the studio from outside: not part of the `studio` package."""

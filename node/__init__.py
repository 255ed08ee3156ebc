"""One convene node as a program: storage, members, proposals, API, pages, CLI."""

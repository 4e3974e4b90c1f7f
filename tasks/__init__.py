"""The lifecycle's steps, one module each (prepare, train, optimize, convert, benchmark,
select, track), and what they share: ``core``, ``models``, ``farm`` and ``device``."""

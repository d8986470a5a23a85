"""Events for surveillance (issue 24, first slice): zones and lines in the config, object events
(``new``/``update``/``end``) and review items from tracks messages, SQLite storage, and
``promptcam events`` publishing ``events.<camera>`` (CONTRACT v1.2). See docs/events.md."""

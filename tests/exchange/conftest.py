from exchange_helpers import config, engine  # noqa: F401  (fixtures)

"""Pure domain logic: validation of API input, intention precedence, config entries.

Nothing here does I/O or reads a clock; every function takes its inputs as arguments.
"""

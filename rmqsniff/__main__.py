"""``python -m rmqsniff``."""
from .cli import main

main()

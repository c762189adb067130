"""The localizer: a character/word detector for text-line images."""

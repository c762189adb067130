# Rules of the recognizer stage (see docs/architecture.md).

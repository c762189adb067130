# Rules of the data stage (see docs/architecture.md).

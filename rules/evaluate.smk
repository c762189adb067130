# Rules of the evaluate stage (see docs/architecture.md).

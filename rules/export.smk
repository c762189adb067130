# Rules of the export stage (see docs/architecture.md).

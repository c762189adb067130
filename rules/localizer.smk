# Rules of the localizer stage (see docs/architecture.md).

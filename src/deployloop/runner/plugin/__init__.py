"""loop's pytest plugin and its redaction, loaded by file name from this folder (see
`deployloop.runner.process.PLUGIN_DIR`): nothing here may import deployloop."""

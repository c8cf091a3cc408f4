"""The bundle contract, the bottom layer: errors, tensor specs and image preprocessing, the typed records
of a manifest, the manifest schema and its migrations, the bundle on disk, declared options, plugin discovery,
the hardware profile. Imports nothing else from edgesdk."""

"""ArcGIS Enterprise: REST client, server-side cache updates, and an emulator for tests."""

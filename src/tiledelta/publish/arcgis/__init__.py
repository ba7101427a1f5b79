"""ArcGIS Enterprise: the REST client, server-side cache updates and publishing."""

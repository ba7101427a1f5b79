"""Publishing: tile packages, thumbnails, and ArcGIS Enterprise (REST client, server-side
cache updates, overwriting the service)."""

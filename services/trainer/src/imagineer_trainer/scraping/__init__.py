"""Web scraping into the catalog: the crawl and its safety rules (no gRPC here; see scrape_server.py)."""

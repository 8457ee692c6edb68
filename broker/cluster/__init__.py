"""Several broker instances on one database: change announcements between them."""

"""Transport: HTTP and Socket.IO handlers. They parse, authorise, call a domain service, reply."""

"""The privacy officers' review web page: officer accounts (password and TOTP),
server-side sessions, the audit-trail search, the break-glass review queue,
trends, charts, log integrity and exports."""

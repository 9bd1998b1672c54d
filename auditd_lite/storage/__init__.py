"""Writing the databases: the schema tables, the live file and its one
read-write connection, the batch writer with its hash chain, holding records
while the disk is full, rotation and retention. Migrations are in migrations/."""

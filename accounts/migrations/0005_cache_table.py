"""The throttles' cache table, made by migrating.

It was made by `createcachetable` alone, outside migrations, so an upgrade that ran only
`migrate` (as Django deployments do) answered every authenticated request with an error.
The table is made here whatever CACHES says (a deployment may move from Redis to the
database cache later); `createcachetable` still works and does nothing when it exists.
"""

from django.core.management.commands.createcachetable import Command as CreateCacheTable
from django.db import migrations

# The database cache's LOCATION in batchsite/settings.py.
TABLE = "batches_cache"


def create(apps, schema_editor):
    command = CreateCacheTable()
    command.verbosity = 0
    command.create_table(schema_editor.connection.alias, TABLE, dry_run=False)


def drop(apps, schema_editor):
    schema_editor.execute(f"DROP TABLE IF EXISTS {schema_editor.quote_name(TABLE)}")


class Migration(migrations.Migration):
    dependencies = [
        ("accounts", "0004_shares"),
    ]

    operations = [migrations.RunPython(create, drop)]

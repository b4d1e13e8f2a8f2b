from django.db import migrations, models


def copy_tool_argument_types(apps, schema_editor):
    """Batches submitted before this field existed show their arguments by their tool's
    parameter types as they are now."""
    Batch = apps.get_model("batches", "Batch")
    Tool = apps.get_model("batches", "Tool")
    for tool in Tool.objects.all():
        types = {name: (spec or {}).get("type", "string") for name, spec in (tool.parameters or {}).items()}
        Batch.objects.filter(tool=tool).update(arg_types=types)


class Migration(migrations.Migration):
    dependencies = [
        ("batches", "0002_batch_command_keys_deletion_cancel"),
    ]

    operations = [
        migrations.AddField(
            model_name="batch",
            name="arg_types",
            field=models.JSONField(
                default=dict,
                editable=False,
                help_text="Each parameter's type when the batch was submitted: how its jobs' args are shown.",
            ),
        ),
        migrations.RunPython(copy_tool_argument_types, migrations.RunPython.noop),
    ]

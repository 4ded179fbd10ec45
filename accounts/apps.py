from django.apps import AppConfig


class AccountsConfig(AppConfig):
    name = "accounts"
    verbose_name = "operators, roles and API tokens"

    def ready(self) -> None:
        from django.db.models.signals import post_migrate

        from accounts import signals  # noqa: F401  (audit events for login failures, lockouts)
        from accounts.roles import ensure_role_groups

        post_migrate.connect(ensure_role_groups, sender=self)

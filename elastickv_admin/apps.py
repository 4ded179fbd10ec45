from django.apps import AppConfig


class ElastickvAdminConfig(AppConfig):
    name = "elastickv_admin"
    verbose_name = "elastickv admin"

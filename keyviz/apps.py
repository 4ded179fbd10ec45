from django.apps import AppConfig


class KeyvizConfig(AppConfig):
    name = "keyviz"
    verbose_name = "Key Visualizer"

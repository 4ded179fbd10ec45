from django.apps import AppConfig


class KeyvizConfig(AppConfig):
    name = "keyviz"
    verbose_name = "Key Visualizer"

    def ready(self) -> None:
        # /metrics (elastickv_admin, below this app) exports the hot-range gauges through
        # a registered source, so no import points up the layers.
        from elastickv_admin.lib import metrics
        from keyviz.hot import hot_metrics_text

        metrics.add_exposition(hot_metrics_text)

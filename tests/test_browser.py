"""What lab/browser.py reads from a dashboard page, on pages captured from a real 6.0 frontend:
the fleet dashboard (every widget rendered) and a dashboard whose widgets the viewer may not read
(the frontend writes the failure into each widget). The live pages, on 6.0 and 7.0, are read by
tests/test_fleet_real.py and the fleet replay."""

import os

import pytest

from lab import browser

HERE = os.path.join(os.path.dirname(__file__), "fixtures", "frontend")


def read(name):
    with open(os.path.join(HERE, name)) as f:
        return f.read()


def test_a_rendered_dashboard_has_no_widget_error():
    shown = browser.widgets(read("dashboard-6.0-fleet.html"))
    assert [w.name for w in shown] == ["Usage per node, in %", "Shared ranges: nodes over the threshold",
                                       "Drops per node", "Problems naming a range"]
    assert [w for w in shown if w.error] == []
    assert "n1: Conntrack: Usage, in %" in shown[0].text and "n2: Conntrack: Usage, in %" in shown[0].text
    assert shown[3].text.startswith("Time Recovery time Status Info Host Problem")


def test_the_7_0_frontend_the_same():
    shown = browser.widgets(read("dashboard-7.0-fleet.html"))
    assert [w.name for w in shown] == ["Usage per node, in %", "Shared ranges: nodes over the threshold",
                                       "Drops per node", "Problems naming a range"]
    assert [w for w in shown if w.error] == []
    assert "mirrorlist-us2: Conntrack: Packets dropped, table full, per second" in shown[2].text
    # 7.0 writes a widget's errors into its own messages box
    failed = read("dashboard-7.0-fleet.html").replace(
        '<div class="dashboard-grid-widget-messages"></div>',
        '<div class="dashboard-grid-widget-messages"><output>Cannot load data.</output></div>', 1)
    assert [w.error for w in browser.widgets(failed)] == ["Cannot load data.", None, None, None]
    # a widget's own text is not its failure: a problem named "Cannot ..." in the problems widget
    named = read("dashboard-7.0-fleet.html").replace("No data found", "Cannot resolve mirror: no data found")
    assert [w.error for w in browser.widgets(named)] == [None, None, None, None]


def test_a_widget_that_failed_says_why():
    shown = browser.widgets(read("dashboard-6.0-no-permissions.html"))
    assert [(w.name, w.error) for w in shown] == [("classic", "No permissions to referred object"),
                                                  ("plain", "No permissions to referred object")]


def test_an_empty_or_boxed_widget_is_a_failure():
    head = ('<div class="dashboard-grid-widget-head"><h4>%s</h4></div>'
            '<div class="dashboard-grid-widget-content">%s</div>')
    shown = browser.widgets(head % ("empty", "") + head % ("boxed", '<output class="msg-bad">x</output>')
                            + head % ("nested", "<div><div>fine</div></div>"))
    assert [(w.name, w.error) for w in shown] == [("empty", "nothing rendered"), ("boxed", "an error message box"),
                                                  ("nested", None)]


def test_the_sign_in_goes_to_the_page():
    url = browser.login_url("http://127.0.0.1:18080/zabbix.php?action=dashboard.view&dashboardid=7")
    assert url == ("http://127.0.0.1:18080/index.php?name=Admin&password=zabbix&enter=Sign+in"
                   "&request=zabbix.php%3Faction%3Ddashboard.view%26dashboardid%3D7")
    with pytest.raises(ValueError):
        browser.login_url("http://127.0.0.1:18080/api_jsonrpc.php")

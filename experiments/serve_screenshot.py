"""docs/serve_page.png: the playground in a headless Chromium (Selenium).

    lm-jax-serve --workdir=runs/char_tf &  # long: not run by tests
    python experiments/serve_screenshot.py --url=http://127.0.0.1:8000/

Generates from "ROMEO:" with seed 7, clicks token `--click` (its attention)
and hovers token `--hover` (its five likeliest alternatives), then saves
the window. Needs the distribution's `chromium` and `chromium-driver`.
"""

import argparse
import shutil
import time

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--url", default="http://127.0.0.1:8000/")
  parser.add_argument("--out", default="docs/serve_page.png")
  parser.add_argument("--click", type=int, default=40)
  parser.add_argument("--hover", type=int, default=30)
  args = parser.parse_args()
  options = webdriver.ChromeOptions()
  options.binary_location = shutil.which("chromium")
  for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
              "--window-size=1100,900"):
    options.add_argument(arg)
  browser = webdriver.Chrome(service=Service(shutil.which("chromedriver")),
                             options=options)
  try:
    browser.get(args.url)
    wait = WebDriverWait(browser, 60)
    wait.until(lambda b: b.find_element(By.ID, "generate").is_displayed())
    browser.find_element(By.ID, "seed").send_keys("7")
    browser.find_element(By.ID, "generate").click()
    wait.until(lambda b: "tokens in" in b.find_element(By.ID, "status").text)
    tokens = browser.find_elements(By.CSS_SELECTOR,
                                   "#output span:not(.prompt)")
    tokens[args.click].click()
    wait.until(lambda b: "layer 0" in b.find_element(By.ID, "inside").text)
    ActionChains(browser).move_to_element(tokens[args.hover]).perform()
    time.sleep(0.5)
    browser.save_screenshot(args.out)
    print(f"wrote {args.out}")
  finally:
    browser.quit()


if __name__ == "__main__":
  main()

"""MedImage Studio core: all logic behind the dashboard, free of any UI import.

Pages, the command line (`python -m core`) and the tests call the same functions.
"""

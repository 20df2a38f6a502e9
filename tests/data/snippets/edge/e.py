def outer():
    class Local:
        def m(self): pass
    return Local

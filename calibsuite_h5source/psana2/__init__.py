"""psana2"""
